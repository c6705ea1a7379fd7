"""One portal's path of a command, between the broker's two sides.

routing      each delivery to its portal's pipeline (an unknown portal, a poisoned
             message: ended here)
pipeline     the lane's conductor: accept -> ready -> run -> send -> decided
jobs         a command in flight, decoded and validated
ordering     one command per item at a time, in arrival order
definitions  custom fields checked against the portal's definitions
batching     groups formed when the limiter lets a call go
calling      the call, and a decision per command (classify, applied)
outcomes     the decision carried out: an event published, then the ack
breaker      a portal in a portal-wide state, probed until it answers
observer     what a lane reports, metrics and log lines, through one object
"""
