from quadgpt.cli import main

raise SystemExit(main())
