"""The records REST API: CRUD, lists with filters, sort, fields and cursors, batches."""
