from balsam_tui.cli import main

raise SystemExit(main())
