"""`stormwatch actions list|approve|reject|kill|silence|unsilence`: the operator's way in when
Slack is down. Decisions go through the same state machine and audit as a Slack click
(source "cli", actor "cli:<login>"); an approval executes here, once.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime

from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("actions", help="list, approve or reject remediation proposals")
    cmd = p.add_subparsers(dest="actions_command", required=True, metavar="ACTION")
    ls = cmd.add_parser("list", help="proposals (pending ones unless --all)")
    ls.add_argument("--all", action="store_true", help="every state, newest last")
    ls.add_argument("--limit", type=int, default=50)
    for name in ("approve", "reject"):
        c = cmd.add_parser(name, help=f"{name} a proposal (its id or a unique prefix)")
        c.add_argument("id")
    k = cmd.add_parser("kill", help="the kill switch: 'on' refuses every action")
    k.add_argument("switch", choices=["on", "off"])
    s = cmd.add_parser("silence", help="refuse actions on a service ('*': all) for a while")
    s.add_argument("service")
    s.add_argument("--for", dest="span", default="1h", help="30m, 2h, 1d (default 1h)")
    s.add_argument("--reason", default="")
    cmd.add_parser("serve", help="run the actions service alone (Slack interactivity URL)")
    u = cmd.add_parser("unsilence", help="lift a silence")
    u.add_argument("service")
    p.set_defaults(run=run)


def serve(settings: StormwatchSettings) -> int:
    """The actions service as a process of its own (compose), until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from actions.service import start_in_pipeline
    from stormwatch.store import open_store

    store = open_store(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from stormwatch.pipeline import FeedbackPublisher

    publisher = FeedbackPublisher(settings)
    svc = start_in_pipeline(settings, store, demo=False, on_feedback=publisher)
    print(f"actions: Slack interactivity URL {svc.url}/slack/interactions", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        publisher.close()
        store.close()
    return 0


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    if args.actions_command == "serve":
        return serve(settings)
    from actions import ActionsError
    from actions.base import State
    from actions.service import build_engine, policies_in_use
    from actions.settings import ActionsSettings
    from stormwatch.commands.query import print_table
    from stormwatch.store import StoreError, open_store

    asettings = policies_in_use(ActionsSettings(data_dir=settings.data_dir))
    store = None
    if args.actions_command != "list":
        try:
            store = open_store(settings)
        except StoreError:
            store = None  # the audit stays in the outbox; the service writes it later
    try:
        engine = build_engine(asettings, store=store, database=settings.database,
                              bootstrap=settings.bootstrap())  # fmt: skip
    except ActionsError as e:
        raise StormwatchError(str(e)) from None
    now = datetime.now(UTC)
    try:
        if args.actions_command == "list":
            ps = engine.state.where() if args.all else engine.state.by_state(
                State.proposed, State.approved, State.executing)  # fmt: skip
            rows = [(p.id, p.state.value, p.policy, p.action, p.target, f"{p.created_at:%F %T}",
                     p.decided_by, ("dry run " if p.dry_run else "") + (p.outcome or ""),
                     p.detail[:60]) for p in ps[-args.limit:]]  # fmt: skip
            if not rows:
                print("no pending proposals" if not args.all else "no proposals")
                return 0
            print_table(["id", "state", "policy", "action", "target", "created", "decided_by",
                         "outcome", "detail"], rows)  # fmt: skip
            return 0
        actor = f"cli:{getpass.getuser()}"
        if args.actions_command == "kill":
            engine.set_kill(args.switch == "on", actor, now, source="cli")
            print(f"kill switch {args.switch}")
            return 0
        if args.actions_command in ("silence", "unsilence"):
            from stormwatch.commands.query import parse_span

            span = parse_span(args.span) if args.actions_command == "silence" else None
            engine.silence(args.service, span, actor, now, source="cli",
                           reason=getattr(args, "reason", ""))  # fmt: skip
            print(f"{args.service}: " + (f"silenced for {args.span}" if span else "unsilenced"))
            return 0
        found = engine.state.find(args.id)
        if len(found) != 1:
            raise StormwatchError(f"{len(found)} proposals match {args.id!r}: give more of the id")
        d = engine.decide(found[0].id, args.actions_command == "approve", actor, now,
                          source="cli", check_approver=False)  # fmt: skip
        p = engine.state.get(found[0].id)
        print(f"{found[0].id}: {d.message}")
        if p is not None and p.state != State.approved:
            print(f"state {p.state.value}" + (f": {p.detail}" if p.detail else ""))
        return 0 if d.code == 200 else 1
    finally:
        engine.auditor.flush()
        engine.executors.close()
        engine.poster.close()
        engine.state.close()
        if store is not None:
            store.close()
