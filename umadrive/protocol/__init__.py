"""The i-PI wire protocol and nothing else: framing, messages, units, the client
state machine and a server side. Imports numpy and ase only, never torch."""
