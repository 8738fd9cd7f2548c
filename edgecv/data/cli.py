"""`edgecv data list | fetch NAME | path NAME`."""
from __future__ import annotations

import argparse

from . import registry
from .download import dataset_root, fetch_dataset, mirror_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list and fetch the public data sets",
                       description="List, download and locate the data sets edgecv uses.",
                       epilog="examples:\n  edgecv data list\n  edgecv data fetch mnist\n"
                              "  EDGECV_DATA=../shared/data edgecv data path smiles",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s.add_parser("list", help="the registry").set_defaults(func=cmd_list)
    f = s.add_parser("fetch", help="download, verify and cache a data set")
    f.add_argument("names", nargs="+", metavar="NAME")
    f.add_argument("--mirror", help="base URL of a mirror with the shared data layout")
    f.add_argument("--force", action="store_true", help="download again even if cached")
    f.set_defaults(func=cmd_fetch)
    w = s.add_parser("path", help="print the local folder of a data set (fetching it if needed)")
    w.add_argument("name")
    w.set_defaults(func=cmd_path)


def cmd_list(args: argparse.Namespace) -> int:
    m = mirror_dir()
    print(f"{'name':<11} {'kind':<11} description" + (f"   [EDGECV_DATA={m}]" if m else ""))
    for d in registry.DATASETS.values():
        print(f"{d.name:<11} {d.kind:<11} {d.description}")
        print(f"{'':<23} origin: {d.origin}; licence: {d.licence}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    for name in args.names:
        registry.get(name)  # unknown names fail before anything downloads
    for name in args.names:
        root = fetch_dataset(name, mirror_url=args.mirror, force=args.force)
        print(f"{name}: {root}")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    print(dataset_root(args.name))
    return 0
