"""Executors: who makes a run's work items (images, score shards) and where.

Every executor calls the stages' per-item functions (`stages.generate.make_images`,
`stages.score.score_shard`), so an item is made the same way whichever one runs it.
"""
