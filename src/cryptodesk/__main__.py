from cryptodesk.cli import main

main()
