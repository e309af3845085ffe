"""The contract between server and client.

Both container images copy this package, so it holds only what the two
programs must agree on: the signaling wire format, the coordinates message on
the data channel, the pts convention, and how flags map to environment
variables.
"""
