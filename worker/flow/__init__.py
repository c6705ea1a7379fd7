"""One portal's path of a command, between the broker's sides.

pipeline     accepts a delivery and carries its job to the end
jobs         a command in flight
ordering     one command per item at a time, in arrival order
definitions  custom fields checked against the portal's definitions
batching     groups formed when the limiter lets a call go
calling      the call, and a decision per command (classify, applied)
outcomes     the decision carried out: an event published, then the ack
breaker      a portal in a portal-wide state, probed until it answers
"""
