"""Read models built from all three topics: each subject's journey and follow-up schedule.

`journey` and `schedule` are pure functions over events (unit-tested, and reusable for rebuilds);
`store` keeps the journey of each subject in PostgreSQL.
"""
