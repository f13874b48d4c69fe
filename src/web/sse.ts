// Server-sent events read with fetch (EventSource cannot send an Authorization header).
// The parser is pure: text in, complete messages out, the unfinished rest kept.

export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/** Splits `buffer` into complete messages (ended by a blank line) and the unfinished rest. */
export function parseSse(buffer: string): { messages: SseMessage[]; rest: string } {
  const messages: SseMessage[] = [];
  const text = buffer.replace(/\r\n?/g, '\n');
  let start = 0;
  for (;;) {
    const end = text.indexOf('\n\n', start);
    if (end < 0) break;
    const block = text.slice(start, end);
    start = end + 2;
    let event = 'message';
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (data.length) messages.push({ event, data: data.join('\n'), ...(id !== undefined ? { id } : {}) });
  }
  return { messages, rest: text.slice(start) };
}

export interface StreamHandle {
  close(): void;
}

/**
 * Follows `url` until closed, reconnecting after a lost connection (1 s, doubling to 15 s).
 * `onState` tells the page whether it is live, so a stale view is never shown as live.
 */
export function followStream(
  url: string,
  authorization: string,
  onMessage: (m: SseMessage) => void,
  onState: (s: { live: boolean; error?: string }) => void,
): StreamHandle {
  let closed = false;
  let controller: AbortController | undefined;
  let delay = 1000;
  const run = async () => {
    while (!closed) {
      controller = new AbortController();
      try {
        const res = await fetch(url, { headers: { authorization, accept: 'text/event-stream' }, signal: controller.signal });
        if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
        onState({ live: true });
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let rest = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const parsed = parseSse(rest + value);
          rest = parsed.rest;
          for (const m of parsed.messages) onMessage(m);
        }
        if (!closed) onState({ live: false, error: 'event stream ended; reconnecting' });
      } catch (e) {
        if (closed) return;
        onState({ live: false, error: `${(e as Error).message}; reconnecting` });
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(15_000, delay * 2);
    }
  };
  void run();
  return {
    close() {
      closed = true;
      controller?.abort();
    },
  };
}
