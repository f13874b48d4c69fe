// The dashboard's shell: login first; then a header with the views and the hash route
// (#/line, #/device/<id>, #/plans, ...), so a view can be bookmarked and the server needs one page.
import { useCallback, useEffect, useMemo, useState } from 'react';
import { Api, loadCredentials, saveCredentials, type Credentials } from './api.ts';
import { Login } from './views/Login.tsx';
import { LineView } from './views/LineView.tsx';
import { DeviceView } from './views/DeviceView.tsx';
import { PlansView } from './views/PlansView.tsx';
import { ImagesView } from './views/ImagesView.tsx';
import { TokensView } from './views/TokensView.tsx';
import { SetupView } from './views/SetupView.tsx';
import { ExportView } from './views/ExportView.tsx';

const VIEWS = [
  ['line', 'Line'],
  ['plans', 'Plans & rules'],
  ['images', 'Images'],
  ['tokens', 'Enrollment tokens'],
  ['setup', 'Network boot setup'],
  ['export', 'Export'],
] as const;

function useHash(): string[] {
  const read = () => window.location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [parts, setParts] = useState(read);
  useEffect(() => {
    const on = () => setParts(read());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return parts;
}

export function App() {
  const [creds, setCreds] = useState<Credentials | undefined>(loadCredentials);
  const [expired, setExpired] = useState(false);
  const logout = useCallback((why?: 'expired') => {
    saveCredentials(undefined);
    setCreds(undefined);
    setExpired(why === 'expired');
  }, []);
  const api = useMemo(() => (creds ? new Api(creds, () => logout('expired')) : undefined), [creds, logout]);
  const [view = 'line', arg] = useHash();

  useEffect(() => {
    document.title = api ? `bootline — ${VIEWS.find(([v]) => v === view)?.[1] ?? 'Device'}` : 'bootline — log in';
  }, [api, view]);

  if (!api) {
    return (
      <Login
        expired={expired}
        onLogin={(c) => {
          saveCredentials(c);
          setCreds(c);
          setExpired(false);
        }}
      />
    );
  }

  return (
    <>
      <a
        className="skip"
        href="#main"
        onClick={(e) => {
          // The hash is the route: move the focus without changing it.
          e.preventDefault();
          document.getElementById('main')?.focus();
        }}
      >
        Skip to content
      </a>
      <header className="top">
        <span className="brand">bootline</span>
        <nav aria-label="Views">
          <ul>
            {VIEWS.map(([v, label]) => (
              <li key={v}>
                <a href={`#/${v}`} aria-current={view === v ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span className="who">{creds?.kind === 'user' ? creds.user : 'admin token'}</span>
        <button type="button" onClick={() => logout()}>
          Log out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {view === 'device' && arg ? (
          <DeviceView key={arg} api={api} id={arg} />
        ) : view === 'plans' ? (
          <PlansView api={api} />
        ) : view === 'images' ? (
          <ImagesView api={api} />
        ) : view === 'tokens' ? (
          <TokensView api={api} />
        ) : view === 'setup' ? (
          <SetupView api={api} />
        ) : view === 'export' ? (
          <ExportView api={api} />
        ) : (
          <LineView api={api} />
        )}
      </main>
    </>
  );
}
