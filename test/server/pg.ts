// The tests' PostgreSQL is the lab's throwaway server (src/lab/postgres.ts).
export { freePort, postgresBinDir, startPostgres, type PgServer } from '../../src/lab/postgres.ts';
