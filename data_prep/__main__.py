"""``python -m data_prep SOURCE --out DIR``: the same as ``quadgpt prepare``."""

from data_prep.prepare import main

raise SystemExit(main())
