"""`python -m examples.board`: roomcast and the board, started together (see run.py)."""

from examples.board.run import main

raise SystemExit(main())
