"""The last phase: SIGTERM while the server is loaded.

Valid traffic and streams run; two streams are held open on purpose (one idle after its first
answer, one that never reads the answers it asked for); two of the largest requests are in flight.
Then SIGTERM. Clients keep sending for 1.5 s (new calls must get UNAVAILABLE), then stop and wait
for their calls. The final scrape happens while the server still drains (--drain_min_s keeps
/metrics up), after every call the client made has ended and the server is quiescent (calls the
clients gave up on may finish a little later on the server): the phase reconciles exactly like the
others, with the two held streams allowed to be still open. The server must then exit 0 within
max(--drain_timeout_s, --drain_min_s) + --exit_slack_s, ending the held streams itself.
"""

import asyncio
import time

import grpc

import soak_generate
import soak_phases as ph
import soak_rest
import soak_traffic as tr
from soak_reconcile import KSERVE

SEND_AFTER_SIGTERM_S = 1.5


class HeldStreams:
    """An idle stream and a never-reading one, left for the server's shutdown to end."""

    def __init__(self, ctx):
        self.ctx, self.ch = ctx, ctx.channel()
        stub = ctx.s.pbg.GRPCInferenceServiceStub(self.ch)
        self.idle = stub.ModelStreamInfer(timeout=tr.SAFETY_S)
        self.unread = stub.ModelStreamInfer(timeout=tr.SAFETY_S)
        self.idle_msgs = tr.stream_messages(ctx, 1, "held-idle", [])
        self.unread_msgs = tr.stream_messages(ctx, 6, "held-unread", [])
        for m in self.unread_msgs:
            m.request.ClearField("outputs")
            m.request.outputs.add(name="logits")
        self.idle_state = tr.StreamState(ctx, self.idle_msgs)
        self.unread_state = tr.StreamState(ctx, self.unread_msgs)
        self.tasks = []

    async def open(self):
        await tr._write_all(self.idle, self.idle_state, self.idle_msgs, half_close=False)
        resp = await asyncio.wait_for(self.idle.read(), self.ctx.stall_s)
        if resp is not grpc.aio.EOF:
            self.idle_state.on_response(resp)
        self.tasks = [asyncio.ensure_future(tr._write_all(self.unread, self.unread_state, self.unread_msgs,
                                                          half_close=False)),
                      asyncio.ensure_future(tr._final_code(self.idle, tr.SAFETY_S))]

    def still_open(self):
        return sum(1 for c in (self.idle, self.unread) if not c.done())

    async def finish(self, timeout):
        """After the exit: the idle stream must have been ended by the server. (A client that never
        reads never sees its stream's status: gRPC delivers it after the messages. The server's
        exit is what shows the unread stream was ended.) Tallies both (they were given up)."""
        idle_code = self.tasks[1]
        await asyncio.wait([idle_code], timeout=timeout)
        if not idle_code.done():
            self.ctx.findings.add("held stream not ended by the server's shutdown",
                                  f"the idle stream still open {timeout:.0f}s after the exit")
        self.ctx.stats["held_stream:idle"][idle_code.result() if idle_code.done() else "(open)"] += 1
        self.ctx.stats["held_stream:unread"]["(never read)"] += 1
        for t in self.tasks:
            t.cancel()
        self.unread.cancel()
        for _ in range(2):
            self.ctx.tally.add_gave_up("rpc", (KSERVE, "ModelStreamInfer"), {"OK", "Canceled", "Unavailable"})
        self.idle_state.settle(gave_up=True)
        self.unread_state.settle(gave_up=True)
        await self.ch.close()


async def sigterm_phase(args, server, ctx, http, report, sampler):
    ctx.stall_s = args.stall_s
    before = await ph.scrape(http)
    sampler.phase = "sigterm"
    stop = asyncio.Event()
    held = HeldStreams(ctx)
    await held.open()
    tasks = [asyncio.ensure_future(tr.valid_worker(ctx, stop, i)) for i in range(args.clients)]
    tasks += [asyncio.ensure_future(tr.stream_worker(ctx, stop, args.skip, i)) for i in range(args.streams)]
    tasks += [asyncio.ensure_future(soak_rest.rest_worker(ctx, stop, http, False, i)) for i in range(args.rest_clients)]
    if ctx.facts.causal:
        tasks += [asyncio.ensure_future(soak_generate.generate_worker(ctx, stop, False))
                  for _ in range(args.generate_clients)]
    tasks += [asyncio.ensure_future(tr.control_worker(ctx, stop, expect_ready=None)),
              asyncio.ensure_future(tr.probe_worker(ctx, stop, http, ready_status=None))]
    await asyncio.sleep(3.0)
    tasks.append(asyncio.ensure_future(tr.priming_burst(ctx, 2)))
    await asyncio.sleep(0.3)
    t_sig = time.monotonic()
    server.sigterm()
    await asyncio.sleep(SEND_AFTER_SIGTERM_S)
    stop.set()
    await ph.finish_roles(ctx, tasks, args.drain_timeout_s + args.stall_s)
    may_be_open = held.still_open()
    # Calls the clients gave up on may still be finishing; wait for that while /metrics is up.
    window = max(1.0, args.drain_min_s - (time.monotonic() - t_sig) - 1.0)
    after, quiet = await ph.quiesce(http, timeout=window, open_streams=may_be_open)
    scrape_s = time.monotonic() - t_sig
    await wait_exit(args, server, report, t_sig)
    await held.finish(timeout=10)
    report.check("sigterm: final scrape while draining", after is not None,
                 f"{scrape_s:.1f}s after SIGTERM" if after is not None else
                 f"/metrics gone {scrape_s:.1f}s after SIGTERM: run the server with --drain_min_s longer "
                 "than the work in flight takes")
    report.sigterm["scrape_s"] = scrape_s
    report.check("sigterm: server quiescent before the final scrape", after is None or quiet,
                 "in-flight 0, queue 0, every started RPC handled but the held streams" if quiet else
                 f"not within the {window:.1f}s left: {ph.imbalance(after)}")
    if after is not None and before is not None:
        ph.record_phase("sigterm", ctx, report, before, after, time.monotonic() - t_sig, open_streams=may_be_open)


async def wait_exit(args, server, report, t_sig):
    bound = max(args.drain_timeout_s, args.drain_min_s) + args.exit_slack_s
    rc = None
    while time.monotonic() - t_sig < bound + 60:
        rc = server.wait_exit(0)
        if rc is not None:
            break
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - t_sig
    report.sigterm.update({"exit_code": rc, "exit_s": seconds, "bound_s": bound})
    if rc is not None and not server.exit_code_known:
        report.check("sigterm: exit code 0", False, "exited; its exit code is unknown (not the soak's child)",
                     enforced=False)
    else:
        report.check("sigterm: exit code 0", rc == 0, f"exit code {rc}" if rc is not None else
                     f"still running {seconds:.0f}s after SIGTERM (killed)")
    report.check("sigterm: exit within the drain bound", rc is not None and seconds <= bound,
                 f"{seconds:.1f}s (bound max(drain_timeout_s, drain_min_s) + {args.exit_slack_s:g}s = {bound:g}s)")
    if rc is None:
        server.kill()
