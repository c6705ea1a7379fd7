"""The broker side: the queues, deliveries in, events out, acks.

topology     the queues (and with SHARDS the exchange) the worker declares
consumer     deliveries in, one channel and prefetch per queue
deliveries   a delivery read from its frames (`Delivery`), and where it came from
publishing   events out, with publisher confirms, many per socket write
acks         the acknowledger: acks coalesced per channel, hand-backs
nodes        AMQP_URL's nodes: the first live one at start, the next at every reconnect
"""
