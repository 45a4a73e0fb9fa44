"""SQL: tables, migrations, the unit of work, and the read-side queries. The one place that knows SQL."""
