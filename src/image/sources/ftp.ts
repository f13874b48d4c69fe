// ftp://[user:pass@]host[:port]/path with basic-ftp: SIZE for the size, REST to start at an
// offset, and the same resume policy as HTTP when a data connection drops mid-transfer.
import { Client, FTPError } from 'basic-ftp';
import { PassThrough, Writable } from 'node:stream';
import type { Readable } from 'node:stream';
import type { Source, SourceOptions } from '../types.ts';
import { DEFAULT_STALL_TIMEOUT_MS, PermanentError, Retrier, abortErrorOf, changedError, formatMiB, redactUrl } from './http.ts';

const STREAM_BUFFER = 1024 * 1024;

/** What identifies the file between connections (FTP has no ETag). */
interface Identity {
  size: number | undefined;
  modified: string | undefined;
}

export class FtpSource implements Source {
  readonly display: string;
  readonly seekable = true;
  private readonly host: string;
  private readonly port: number;
  private readonly user: string;
  private readonly password: string;
  /** RFC 1738: relative to the login directory; `ftp://host//abs` is absolute. */
  private readonly path: string;
  private identity: Identity | undefined;

  constructor(
    url: string | URL,
    private readonly options: SourceOptions = {},
  ) {
    const u = new URL(url);
    if (u.protocol !== 'ftp:') throw new Error(`not an ftp:// URL: ${redactUrl(u)}`);
    this.display = redactUrl(u);
    this.host = u.hostname.replace(/^\[|\]$/g, '');
    this.port = u.port ? Number(u.port) : 21;
    this.user = u.username ? decodeURIComponent(u.username) : 'anonymous';
    this.password = u.password ? decodeURIComponent(u.password) : 'anonymous@';
    this.path = decodeURIComponent(u.pathname.slice(1));
    if (!this.path) throw new Error(`${this.display}: no file path in the URL`);
  }

  async size(): Promise<number | undefined> {
    const client = await this.connect();
    try {
      return (await this.identify(client)).size;
    } finally {
      client.close();
    }
  }

  async exists(): Promise<boolean> {
    const client = await this.connect();
    try {
      await client.size(this.path);
      return true;
    } catch (e) {
      if (e instanceof FTPError && e.code === 550) return false;
      throw e;
    } finally {
      client.close();
    }
  }

  async open(offset: number, signal?: AbortSignal): Promise<Readable> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
    signal?.throwIfAborted();
    const retrier = new Retrier(this.options, this.display);
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(abortErrorOf(signal!));
    signal?.addEventListener('abort', onAbort, { once: true });

    let client: Client;
    let identity: Identity;
    for (;;) {
      try {
        client = await this.connect();
        try {
          identity = await this.identify(client);
        } catch (e) {
          client.close();
          throw e;
        }
        break;
      } catch (e) {
        if (e instanceof PermanentError || ac.signal.aborted) {
          signal?.removeEventListener('abort', onAbort);
          throw ac.signal.aborted ? abortErrorOf(ac.signal) : e;
        }
        await retrier.wait(e as Error, `cannot reach the server (${(e as Error).message})`, 'retrying', ac.signal);
      }
    }
    try {
      this.checkSame(identity);
    } catch (e) {
      client.close();
      signal?.removeEventListener('abort', onAbort);
      throw e;
    }

    const out = new PassThrough({ highWaterMark: STREAM_BUFFER });
    let reached = offset;
    let finished = false;
    const stop = (): void => {
      signal?.removeEventListener('abort', onAbort);
      client.close();
    };
    ac.signal.addEventListener('abort', () => {
      stop();
      if (!finished) out.destroy(abortErrorOf(ac.signal));
    });
    // The consumer going away ends the transfer too.
    out.once('close', () => {
      if (!finished && !ac.signal.aborted) ac.abort();
    });

    const run = async (): Promise<void> => {
      let cause: Error | undefined;
      for (;;) {
        if (cause) {
          client.close();
          await retrier.wait(cause, `${cause.message} at ${formatMiB(reached)}`, 'resuming', ac.signal);
          try {
            client = await this.connect();
            this.checkSame(await this.identify(client));
          } catch (e) {
            if (e instanceof PermanentError) throw e;
            cause = e as Error;
            continue;
          }
        }
        // basic-ftp ends and destroys its destination; a fresh sink per attempt keeps `out` open.
        const sink = new Writable({
          write(chunk: Buffer, _encoding, callback) {
            reached += chunk.length;
            retrier.progress(chunk.length);
            if (out.write(chunk)) callback();
            else out.once('drain', () => callback());
          },
        });
        try {
          await client.downloadTo(sink, this.path, reached);
        } catch (e) {
          if (ac.signal.aborted) return;
          cause = new Error(`transfer failed (${(e as Error).message})`, { cause: e });
          continue;
        }
        if (identity.size !== undefined && reached < identity.size) {
          cause = new Error('transfer ended early');
          continue;
        }
        finished = true;
        stop();
        out.end();
        return;
      }
    };
    run().catch((e: Error) => {
      stop();
      if (!ac.signal.aborted) out.destroy(e);
    });
    return out;
  }

  private async connect(): Promise<Client> {
    const client = new Client(this.options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS);
    try {
      await client.access({ host: this.host, port: this.port, user: this.user, password: this.password });
      return client;
    } catch (e) {
      client.close();
      // 5xx at login (530 bad password) will not get better by retrying.
      if (e instanceof FTPError && e.code >= 500) {
        throw new PermanentError(`${this.display}: login failed (${e.message})`, { cause: e });
      }
      throw e;
    }
  }

  private async identify(client: Client): Promise<Identity> {
    let size: number | undefined;
    try {
      size = await client.size(this.path);
    } catch (e) {
      if (e instanceof FTPError && e.code === 550) {
        throw new PermanentError(`${this.display}: not found on the server (${e.message})`, { cause: e });
      }
      if (!(e instanceof FTPError)) throw e;
      size = undefined; // a server without SIZE: resume still works, completeness is unchecked
    }
    let modified: string | undefined;
    try {
      modified = (await client.lastMod(this.path)).toISOString();
    } catch (e) {
      if (!(e instanceof FTPError)) throw e;
    }
    return { size, modified };
  }

  /** Remembers the first identity seen; a later different one means the file was replaced. */
  private checkSame(now: Identity): void {
    const was = this.identity;
    if (!was) {
      this.identity = now;
      return;
    }
    if (was.size !== undefined && now.size !== undefined && was.size !== now.size) {
      throw changedError(this.display, `size was ${was.size}, now ${now.size}`);
    }
    if (was.modified && now.modified && was.modified !== now.modified) {
      throw changedError(this.display, `modified ${was.modified}, now ${now.modified}`);
    }
  }
}
