from distillbook.core.cli import main

raise SystemExit(main())
