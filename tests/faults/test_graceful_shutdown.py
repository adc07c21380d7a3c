"""SIGTERM to a service while commands are in flight: it drains and exits by itself, in time; every
command it answered 201 is stored and reaches the projections once it is back."""

from __future__ import annotations

import signal
import time
from functools import partial

from faults_support import (
    Client,
    Ledger,
    assert_converged,
    fault_stack,
    restart,
    run_in_threads,
    wait_caught_up,
)
from support import eventually

SUBJECTS = [f"UCT-28-{n:03d}" for n in range(1, 7)]


def test_sigterm_drains_in_flight_commands_and_loses_nothing(servers, tmp_path):
    with fault_stack(servers, tmp_path) as stack:
        ledger = Ledger()
        client = Client(stack, ledger)
        for s in SUBJECTS:
            assert client.enrol(s).status == 201
        client.close()
        wait_caught_up(stack.database_url)  # treatment knows every enrolment
        treatment = stack.group["treatment"]
        stopped: dict[str, float] = {}

        def treat(subject: str) -> None:
            c = Client(stack, ledger)
            try:
                c.journey(subject, enrol=False, ld_days=5, aes=0, visits=())
            finally:
                c.close()

        def terminate_treatment_mid_way() -> None:
            eventually(lambda: ledger.count(201, "treatment") >= 6, timeout=60, interval=0.02)
            stopped["at"] = time.monotonic()
            treatment.stop()  # SIGTERM; SIGKILL only if it has not exited after 15 s
            stopped["seconds"] = time.monotonic() - stopped["at"]
            stopped["code"] = treatment.process.returncode
            stopped["answered"] = ledger.count(201, "treatment")
            restart(stack, "treatment")

        run_in_threads(terminate_treatment_mid_way, *(partial(treat, s) for s in SUBJECTS), workers=len(SUBJECTS) + 1)

        # uvicorn finishes its shutdown, then exits by the signal it caught (-15); -9 would mean killed.
        assert stopped["code"] in (0, -signal.SIGTERM), f"exit code {stopped['code']} after {stopped['seconds']:.1f}s"
        assert "Application shutdown complete" in treatment.log_file.read_text()  # relay, consumers, pools
        drained = [
            x
            for x in ledger.sent
            if x.service == "treatment" and x.status == 201 and x.attempted_at < stopped["at"] < x.answered_at
        ]
        assert drained, "no command in flight at the SIGTERM was answered"
        assert stopped["answered"] < len(SUBJECTS) * 6, "the SIGTERM came after every command"
        assert ledger.unreachable > 0, "no command met the stopped service"
        assert ledger.count(201) + ledger.count(None) == len(ledger.sent) == len(SUBJECTS) * 7
        ledger.assert_stored_exactly(stack.database_url, allowed=(201, None))

        models = assert_converged(stack.database_url)
        for s in SUBJECTS:
            answered = sorted(
                x.key
                for x in ledger.sent
                if x.subject_id == s and x.event_type == "LymphodepletionGiven" and x.status == 201
            )
            assert [d for d in models["followup-journey"][s]["lymphodepletion_days"] if d in answered] == answered
            assert models["followup-subject-facts"][s]["infused_on"] or not any(
                x.status == 201 for x in ledger.sent if x.subject_id == s and x.event_type == "UCARTInfused"
            )
