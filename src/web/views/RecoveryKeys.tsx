// A device's escrowed disk volumes and, behind an explicit confirm, one volume's recovery
// key at a time. The server records every reveal (who, when, how often): the list shows it.
import { useEffect, useState } from 'react';
import type { EscrowedVolume } from '../../api/recovery-key.ts';
import type { Api } from '../api.ts';
import { CopyButton } from './CopyButton.tsx';

const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString() : '—');

export function RecoveryKeys({
  api,
  deviceId,
  deviceName,
  refresh,
  onVolumes,
}: {
  api: Api;
  deviceId: string;
  deviceName: string;
  refresh: unknown;
  /** Told the list each time it loads (the run report offers its keys' export). */
  onVolumes?: (v: EscrowedVolume[]) => void;
}) {
  const [volumes, setVolumes] = useState<EscrowedVolume[]>();
  const [shown, setShown] = useState<{ volumeUuid: string; recoveryKey: string }>();
  const [error, setError] = useState<string>();

  const load = () =>
    api
      .recoveryKeys(deviceId)
      .then((v) => {
        setVolumes(v);
        onVolumes?.(v);
      })
      .catch((e: Error) => setError(e.message));

  // Reloaded as the device's run moves on (next task, run end): encrypt-disk escrows during its task.
  useEffect(() => {
    void load();
  }, [api, deviceId, refresh]);

  const reveal = async (v: EscrowedVolume) => {
    const ok = window.confirm(
      `Reveal the recovery key of ${v.partition} (volume ${v.volumeUuid}) on ${deviceName}?\n\nAnyone who sees it can unlock that disk. The reveal is recorded with your name.`,
    );
    if (!ok) return;
    setError(undefined);
    try {
      const { recoveryKey } = await api.revealRecoveryKey(deviceId, v.volumeUuid);
      setShown({ volumeUuid: v.volumeUuid, recoveryKey });
      await load();
    } catch (e) {
      setError((e as Error).message);
    }
  };

  if (!volumes) {
    return error ? (
      <p className="error" role="alert">
        {error}
      </p>
    ) : (
      <p aria-busy="true">Loading escrowed volumes…</p>
    );
  }
  return (
    <div className="recovery-keys" data-testid="recovery-key">
      {volumes.length === 0 ? (
        <p>No recovery key escrowed: this device has no volume encrypted by bootline (the encrypt-disk task escrows one per volume).</p>
      ) : (
        <table>
          <caption className="sr-only">Encrypted volumes of this device whose recovery key the server holds</caption>
          <thead>
            <tr>
              <th scope="col">Partition</th>
              <th scope="col">Volume (LUKS2 UUID)</th>
              <th scope="col">Keyslot</th>
              <th scope="col">TPM PCRs</th>
              <th scope="col">Escrowed</th>
              <th scope="col">Last revealed</th>
              <th scope="col">
                <span className="sr-only">Reveal</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {volumes.map((v) => (
              <tr key={v.volumeUuid} data-volume={v.volumeUuid}>
                <th scope="row">
                  {v.partition}
                  {v.label && <span className="muted"> ({v.label})</span>}
                </th>
                <td>
                  <code>{v.volumeUuid}</code>
                </td>
                <td>{v.keyslot}</td>
                <td>{v.pcrs ? v.pcrs.join(', ') || 'none' : '—'}</td>
                <td>{when(v.createdAt)}</td>
                <td className="revealed">{v.revealedAt ? `${when(v.revealedAt)} by ${v.revealedBy ?? '?'} (${v.revealCount}×)` : 'never'}</td>
                <td>
                  <button type="button" onClick={() => void reveal(v)} aria-label={`Reveal recovery key of ${v.partition}`}>
                    Reveal recovery key
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {shown && (
        <div className="secret" role="status">
          <p>
            Recovery key of volume <code>{shown.volumeUuid}</code> — type it at the disk&apos;s passphrase prompt, or give it to{' '}
            <code>cryptsetup open</code>:
          </p>
          <code className="recovery-key" data-testid="revealed-key">
            {shown.recoveryKey}
          </code>{' '}
          <CopyButton text={shown.recoveryKey} label="Copy recovery key" />{' '}
          <button type="button" onClick={() => setShown(undefined)}>
            Hide
          </button>
        </div>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
