"""Market-data files: candle and trade files users import, export and replay."""
