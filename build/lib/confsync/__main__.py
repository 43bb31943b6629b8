from confsync.cli import main

main()
