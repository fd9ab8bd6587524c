from sas3d.cli import main

raise SystemExit(main())
