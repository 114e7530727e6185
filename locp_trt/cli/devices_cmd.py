"""`python -m locp_trt devices`: the device profiles, which of their runtimes run here, and what
`--device auto` resolves to on this machine (plus the clock state on a Jetson).
"""

from __future__ import annotations

import argparse

__all__ = ["Command"]


class Command:
    """List device profiles (runtimes, precision, batch) and what runs on this machine."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pattern", nargs="?", default="*",
                            help="shell-style profile filter, e.g. 'jetson*' (default: all)")
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="also say why each unavailable runtime cannot run here")

    def run(self, args: argparse.Namespace) -> int:
        from ..deploy.devices import (
            auto_device_name,
            check_clocks_locked,
            get_device,
            list_devices,
            runtime_availability,
        )
        from ..errors import InvalidConfigError

        names = list_devices(args.pattern)
        if not names:
            raise InvalidConfigError(f"no device profile matches {args.pattern!r}; profiles: "
                                     f"{', '.join(list_devices())}")
        print(f"{'name':<12} {'precision':<9} {'batch':>5} {'workspace':>10} {'dla':>4}  "
              f"{'runtimes (+ runs here)':<44} {'uses here'}")
        why: list[str] = []
        for name in names:
            p = get_device(name)
            avail = runtime_availability(p)
            shown = " > ".join(f"{r}{'+' if reason is None else ''}" for r, reason in avail.items())
            chosen = next((r for r, reason in avail.items() if reason is None), "none")
            ws = f"{p.workspace_mb} MiB" if p.workspace_mb else "-"
            dla = "-" if p.dla_core is None else str(p.dla_core)
            print(f"{name:<12} {p.precision.value:<9} {p.batch:>5} {ws:>10} {dla:>4}  {shown:<44} {chosen}")
            if args.verbose:
                why += [f"  {name}/{r}: {reason}" for r, reason in avail.items() if reason is not None]
        for line in dict.fromkeys(why):
            print(line)
        auto, reason = auto_device_name()
        print(f"auto on this machine: {auto} ({reason})")
        warning = check_clocks_locked()
        if warning:
            print(f"warning: {warning}")
        return 0
