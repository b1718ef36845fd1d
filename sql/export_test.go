package sql

// FlushEarlyAt is flushEarlyAt, for the tests of package sql_test.
const FlushEarlyAt = flushEarlyAt
