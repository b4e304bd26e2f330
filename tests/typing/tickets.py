import attrs

import runjournal
from runjournal import Context, Machine, Transition


@attrs.frozen
class Ticket:
    id: str
    subject: str


@attrs.frozen
class Urgency:
    """How urgent a support ticket is."""

    score: int = attrs.field(validator=attrs.validators.in_(range(1, 6)))
    """1 (whenever) to 5 (drop everything)."""
    reason: str


@attrs.frozen
class Queue:
    tickets: tuple[Ticket, ...]
    next: int = 0
    urgent: tuple[str, ...] = ()


queue = Machine("queue", state=Queue, start="score", input="tickets", model="claude-haiku-5-5")


@queue.step(to=("score",))
def score(ctx: Context, s: Queue) -> Transition:
    if s.next == len(s.tickets):
        return ctx.finish(s)
    ticket = s.tickets[s.next]
    urgency = ctx.ask(Urgency, prompt=f"How urgent is this? {ticket.subject}", key=ticket.id)
    if urgency.score >= 4:
        ctx.decide(item=ticket.id, outcome="urgent", reason=urgency.reason, score=urgency.score)
        s = attrs.evolve(s, urgent=(*s.urgent, ticket.id))
    return ctx.goto("score", attrs.evolve(s, next=s.next + 1))


TICKETS = [Ticket("T-1", "Checkout fails for every card"), Ticket("T-2", "Typo on /about")]

if __name__ == "__main__":
    offline = runjournal.Options(models=runjournal.offline("chaos"))  # drop it to call the API
    outcome = runjournal.run(queue, TICKETS, db="journal.db", options=offline)
    print(outcome.run.run_id, outcome.run.status, outcome.state.urgent)
