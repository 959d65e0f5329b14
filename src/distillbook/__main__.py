from distillbook.cli import main

raise SystemExit(main())
