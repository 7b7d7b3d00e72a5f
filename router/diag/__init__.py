"""Router diagnostics: packet capture, probes, live nftables trace and show
commands, served by the router agent as the RouterDiagnostics gRPC service
(``router.agent.diag_service``). Nothing a caller sends reaches a shell: every
external tool runs from an argv list after the values were validated.
"""
