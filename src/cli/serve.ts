// `bootline serve`: option parsing only; the server lives in src/server/.
import type { Command } from 'commander';
import { loadServerModule } from './server-module.ts';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description("run the line's server: network boot, images, plans, events, dashboard API")
    .option('--config <file>', 'server settings file (YAML); options below win over it')
    .option('--data <dir>', 'data directory: database, images, installer (default ./bootline-data)')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8080)')
    .option('--db <url>', 'sqlite:PATH or postgres://user:pass@host/db (default sqlite:<data>/bootline.db)')
    .option('--public-url <url>', 'URL devices reach this server at (default: taken from each request)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)…')
    .option('--tls-key <file>', '…and this key')
    .option('--tftp <host:port>', 'also serve <data>/tftp over TFTP here (for firmware that can only PXE), e.g. 0.0.0.0:69')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default info)')
    .option('--new-admin-token', 'make another admin token and print it (when the first one is lost)')
    .option('--print-dnsmasq-config', 'print a proxy-DHCP configuration for dnsmasq that boots devices into this server, and exit')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const server = await loadServerModule();
      await server.serve(opts);
    });
}
