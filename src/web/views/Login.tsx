// Login with the server's admin credentials: an admin token (bla_…) or a user and password.
// They are checked against the server before the dashboard opens, and kept for this tab only.
import { useState, type FormEvent } from 'react';
import { Api, ApiError, type Credentials } from '../api.ts';

export function Login({ onLogin, expired }: { onLogin: (c: Credentials) => void; expired: boolean }) {
  const [kind, setKind] = useState<'token' | 'user'>('token');
  const [token, setToken] = useState('');
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>(expired ? 'The server no longer accepts these credentials: log in again.' : undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (ev: FormEvent) => {
    ev.preventDefault();
    const c: Credentials = kind === 'token' ? { kind, token: token.trim() } : { kind, user: user.trim(), password };
    if (kind === 'token' && !token.trim()) return setError('Enter the admin token (it starts with bla_).');
    if (kind === 'user' && (!user.trim() || !password)) return setError('Enter the user name and the password.');
    setBusy(true);
    setError(undefined);
    try {
      await new Api(c).counts();
      onLogin(c);
    } catch (e) {
      setError(e instanceof ApiError && e.status === 401 ? `Not accepted: ${e.message}` : `Cannot reach the server: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="login" id="main">
      <h1>bootline line dashboard</h1>
      <p>Log in with the server&apos;s admin credentials.</p>
      <form onSubmit={submit} aria-describedby={error ? 'login-error' : undefined}>
        <fieldset>
          <legend>Credentials</legend>
          <label>
            <input type="radio" name="kind" checked={kind === 'token'} onChange={() => setKind('token')} /> With an admin token
          </label>
          <label>
            <input type="radio" name="kind" checked={kind === 'user'} onChange={() => setKind('user')} /> With a user and password
          </label>
        </fieldset>
        {kind === 'token' ? (
          <label className="field">
            Admin token
            <input type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} placeholder="bla_…" autoFocus />
          </label>
        ) : (
          <>
            <label className="field">
              User
              <input autoComplete="username" value={user} onChange={(e) => setUser(e.target.value)} autoFocus />
            </label>
            <label className="field">
              Password
              <input type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
            </label>
          </>
        )}
        {error && (
          <p id="login-error" className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Checking…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}
