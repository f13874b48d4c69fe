// The network-boot setup to paste: the proxy-DHCP dnsmasq configuration and the generic iPXE script.
import { useEffect, useState } from 'react';
import type { SetupSnippets } from '../../api/admin.ts';
import type { Api } from '../api.ts';
import { CopyButton } from './CopyButton.tsx';

export function SetupView({ api }: { api: Api }) {
  const [s, setS] = useState<SetupSnippets>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api.setup().then(setS, (e: Error) => setError(e.message));
  }, [api]);
  return (
    <section aria-labelledby="setup-title">
      <h1 id="setup-title">Network boot setup</h1>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {s && (
        <>
          <p>
            Devices reach this server at <code>{s.baseUrl}</code>. The line&apos;s DHCP server keeps leasing addresses; dnsmasq in proxy mode adds the boot
            information: PXE firmware gets iPXE over TFTP (<code>bootline serve --tftp 0.0.0.0:69</code>), iPXE gets <code>{s.baseUrl}/boot.ipxe</code>.
          </p>
          <h2 id="dnsmasq-title">dnsmasq (proxy DHCP)</h2>
          {s.dnsmasq ? (
            <>
              <p>
                Save as <code>/etc/dnsmasq.d/bootline.conf</code> and restart dnsmasq.
              </p>
              <pre className="snippet" aria-labelledby="dnsmasq-title" tabIndex={0} data-testid="dnsmasq">
                {s.dnsmasq}
              </pre>
              <CopyButton text={s.dnsmasq} label="Copy dnsmasq configuration" />
            </>
          ) : (
            <p className="error">{s.dnsmasqError}</p>
          )}
          <h2 id="ipxe-title">iPXE script</h2>
          <p>
            Served at <code>{s.baseUrl}/boot.ipxe</code>; embed it in an iPXE build or put it on a USB stick for firmware without network boot configuration.
          </p>
          <pre className="snippet" aria-labelledby="ipxe-title" tabIndex={0} data-testid="ipxe">
            {s.ipxe}
          </pre>
          <CopyButton text={s.ipxe} label="Copy iPXE script" />
        </>
      )}
    </section>
  );
}
