import tickets

from runjournal.machine.testing import FakeModel, parse_spec
from runjournal.machine.testing.pytest_plugin import RunOffline


def test_urgent_tickets(run_offline: RunOffline, fake_model: FakeModel) -> None:
    fake_model.set_faults(parse_spec("chaos"))  # rate limits, timeouts, bad answers...
    fake_model.responder = lambda request: {"score": 5, "reason": "customers cannot pay"}
    outcome = run_offline(tickets.queue, tickets.TICKETS)
    assert outcome.run.status == "done"
    assert outcome.state.urgent == ("T-1", "T-2")
    assert outcome.run.model_calls == 2
