from umadrive.cli import main

raise SystemExit(main())
