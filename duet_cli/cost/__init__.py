"""The cost model: FLOPs and KV-cache bytes from architecture numbers, and `duet profile`'s analysis."""
