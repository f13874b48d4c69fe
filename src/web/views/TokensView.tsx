// Enrollment tokens: one per line or batch (its label becomes the devices' batch), with an
// expiry; created with the secret shown once; revoked at once.
import { useEffect, useState, type FormEvent } from 'react';
import type { EnrollmentToken } from '../../api/admin.ts';
import type { Api, TokenCreated } from '../api.ts';
import { CopyButton } from './CopyButton.tsx';

export function tokenStatus(t: EnrollmentToken, nowMs: number): 'active' | 'expired' | 'revoked' {
  if (t.revokedAt) return 'revoked';
  if (t.expiresAt && Date.parse(t.expiresAt) <= nowMs) return 'expired';
  return 'active';
}

export function TokensView({ api }: { api: Api }) {
  const [tokens, setTokens] = useState<EnrollmentToken[]>([]);
  const [label, setLabel] = useState('');
  const [hours, setHours] = useState('24');
  const [created, setCreated] = useState<TokenCreated>();
  const [error, setError] = useState<string>();
  const reload = () => api.tokens().then(setTokens, (e: Error) => setError(e.message));
  useEffect(() => {
    void reload();
  }, [api]);

  const create = async (ev: FormEvent) => {
    ev.preventDefault();
    const h = hours.trim() === '' ? undefined : Number(hours);
    if (h !== undefined && (!Number.isFinite(h) || h <= 0)) return setError('Expires in: a number of hours above 0, or empty for never.');
    try {
      setCreated(await api.createToken(label.trim(), h === undefined ? undefined : Math.round(h * 3600)));
      setError(undefined);
      setLabel('');
      await reload();
    } catch (e) {
      setError((e as Error).message);
    }
  };

  const now = Date.now();
  return (
    <section aria-labelledby="tokens-title">
      <h1 id="tokens-title">Enrollment tokens</h1>
      <p>A device enrolls with a token (or a boot token from the server&apos;s iPXE script); the token&apos;s label becomes the device&apos;s batch.</p>
      <form className="inline-form" onSubmit={create} aria-label="Create an enrollment token">
        <label>
          Label (line or batch)
          <input value={label} required maxLength={200} onChange={(e) => setLabel(e.target.value)} placeholder="batch-2026-12" />
        </label>
        <label>
          Expires in (hours, empty: never)
          <input type="number" min={0} step="any" value={hours} onChange={(e) => setHours(e.target.value)} />
        </label>
        <button type="submit">Create token</button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {created && (
        <div className="secret" role="status">
          <p>
            Token for <strong>{created.label}</strong> — copy it now, the server keeps only its hash:
          </p>
          <code data-testid="new-token">{created.token}</code> <CopyButton text={created.token} label="Copy token" />
        </div>
      )}
      <table>
        <thead>
          <tr>
            <th scope="col">Label</th>
            <th scope="col">Id</th>
            <th scope="col">Created</th>
            <th scope="col">Expires</th>
            <th scope="col">Status</th>
            <th scope="col">Uses</th>
            <th scope="col">
              <span className="sr-only">Revoke</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {tokens.map((t) => {
            const s = tokenStatus(t, now);
            return (
              <tr key={t.id} data-token={t.id}>
                <td>{t.label}</td>
                <td>
                  <code>{t.id}</code>
                </td>
                <td>{new Date(t.createdAt).toLocaleString()}</td>
                <td>{t.expiresAt ? new Date(t.expiresAt).toLocaleString() : 'never'}</td>
                <td>
                  <span className={`badge token-${s}`}>{s}</span>
                </td>
                <td>{t.uses}</td>
                <td>
                  {s !== 'revoked' && (
                    <button
                      type="button"
                      className="danger"
                      aria-label={`Revoke token ${t.label} (${t.id})`}
                      onClick={async () => {
                        if (!window.confirm(`Revoke the token for ${t.label}? Devices can no longer enroll with it.`)) return;
                        try {
                          await api.revokeToken(t.id);
                          await reload();
                        } catch (e) {
                          setError((e as Error).message);
                        }
                      }}
                    >
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
