"""Print live updates of cryptodesk WebSocket channels.

python examples/ws_client.py ws://127.0.0.1:8000/api/v1/ws ticker:sim:BTC/USDT
python examples/ws_client.py URL portfolio --token TOKEN --count 10
"""

import argparse
import asyncio
import json

from websockets.asyncio.client import connect


async def watch(url: str, channels: list[str], token: str | None, count: int) -> None:
    async with connect(f"{url}?token={token}" if token else url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channels": channels}))
        seqs: dict[str, int] = {}  # channel -> seq of the last snapshot or delta applied
        deltas = 0
        async for text in ws:
            msg = json.loads(text)
            kind, channel = msg["type"], msg.get("channel")
            if kind == "ping":  # answer, or the server closes an idle connection (4002)
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "error":
                print("error", msg["code"], msg["message"])
            elif kind == "snapshot":
                seqs[channel] = msg["seq"]
                print("snapshot", channel, f"seq={msg['seq']}", json.dumps(msg["data"]))
            elif kind == "delta" and msg["seq"] > seqs.get(channel, msg["seq"]):
                expected = seqs[channel] + 1 + msg.get("skipped", 0)
                if msg["seq"] != expected:  # never happens; resubscribing resynchronises
                    await ws.send(json.dumps({"type": "subscribe", "channels": [channel]}))
                    continue
                seqs[channel] = msg["seq"]
                skipped = f" skipped={msg['skipped']}" if "skipped" in msg else ""
                print("delta", channel, f"seq={msg['seq']}{skipped}", json.dumps(msg["data"]))
                deltas += 1
                if deltas == count:
                    return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print cryptodesk WebSocket channels.")
    parser.add_argument("url")
    parser.add_argument("channels", nargs="+")
    parser.add_argument("--token", help="an access token or API key")
    parser.add_argument("--count", type=int, default=0, help="stop after this many deltas")
    args = parser.parse_args()
    asyncio.run(watch(args.url, args.channels, args.token, args.count))
