// Prometheus metrics of one server process (its own registry, so several servers in one
// test process do not share counters).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from './db/store.ts';

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'method' | 'route' | 'status'>;
  requestSeconds: Histogram<'method' | 'route'>;
  eventsIngested: Counter<'type'>;
  eventDuplicates: Counter;
  bytesServed: Counter<'kind'>;
}

export function createMetrics(store: Store): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bootline_server_' });
  const requests = new Counter({
    name: 'bootline_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const requestSeconds = new Histogram({
    name: 'bootline_http_request_duration_seconds',
    help: 'Time to answer a request, by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [registry],
  });
  const eventsIngested = new Counter({
    name: 'bootline_events_ingested_total',
    help: 'Device events stored (duplicates not counted), by type',
    labelNames: ['type'] as const,
    registers: [registry],
  });
  const eventDuplicates = new Counter({ name: 'bootline_event_duplicates_total', help: 'Re-sent events dropped as already stored', registers: [registry] });
  const bytesServed = new Counter({ name: 'bootline_bytes_served_total', help: 'Bytes of images and installer files sent', labelNames: ['kind'] as const, registers: [registry] });
  new Gauge({
    name: 'bootline_devices',
    help: 'Devices by state',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const counts = await store.countDevicesByState();
      this.reset();
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  return { registry, requests, requestSeconds, eventsIngested, eventDuplicates, bytesServed };
}
