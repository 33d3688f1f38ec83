from .chat import main

main()
