"""The writer side of the server: the mainLoop (the only writer) and its writer process, the timeout scheduler,
the event broker, a cluster node's tail, the read pool and the ledger's lock. It imports the ledger and the shared
leaves only, never an adapter."""
