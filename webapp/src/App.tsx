import { useEffect, useState, type FormEvent } from 'react';
import { getToken, onTokenChange, setToken } from './api';
import { CameraLive } from './pages/CameraLive';
import { Dashboard } from './pages/Dashboard';
import { Execution } from './pages/Execution';
import { Events } from './pages/Events';
import { Executions } from './pages/Executions';
import { NotFound } from './pages/NotFound';
import { Publish } from './pages/Publish';
import { Link, matchRoute, usePathname } from './router';

function TokenField() {
  const [saved, setSaved] = useState(getToken());
  const [draft, setDraft] = useState('');
  const [editing, setEditing] = useState(false);
  useEffect(() => onTokenChange(() => setSaved(getToken())), []);

  const save = (e: FormEvent) => {
    e.preventDefault();
    setToken(draft);
    setDraft('');
    setEditing(false);
  };

  if (!editing) {
    return (
      <div className="token">
        <span className={saved ? 'token-set' : 'token-unset'} data-testid="token-status">
          {saved ? 'API token set' : 'No API token'}
        </span>
        <button className="header-button" onClick={() => setEditing(true)} data-testid="token-edit">
          {saved ? 'Change' : 'Set token'}
        </button>
        {saved && (
          <button className="header-button" onClick={() => setToken('')} data-testid="token-clear">
            Clear
          </button>
        )}
      </div>
    );
  }
  return (
    <form className="token" onSubmit={save}>
      <input
        type="password"
        autoFocus
        placeholder="Bearer token"
        value={draft}
        onChange={(e) => setDraft(e.target.value)}
        data-testid="token-input"
        aria-label="API token"
      />
      <button className="header-button" type="submit" data-testid="token-save">
        Save
      </button>
      <button className="header-button" type="button" onClick={() => setEditing(false)}>
        Cancel
      </button>
    </form>
  );
}

export function App() {
  const route = matchRoute(usePathname());
  let page;
  switch (route.name) {
    case 'dashboard':
      page = <Dashboard />;
      break;
    case 'camera':
      page = <CameraLive key={route.id} id={route.id} />;
      break;
    case 'publish':
      page = <Publish key={route.id} id={route.id} />;
      break;
    case 'executions':
      page = <Executions />;
      break;
    case 'events':
      page = <Events />;
      break;
    case 'execution':
      page = <Execution key={route.id} id={route.id} />;
      break;
    default:
      page = <NotFound path={route.path} />;
  }
  return (
    <>
      <header className="topbar">
        <Link to="/" className="brand">
          <img src="/favicon.svg" alt="" width={22} height={22} />
          ImageFlowCanvas
        </Link>
        <nav>
          <Link to="/" className={route.name === 'dashboard' ? 'active' : ''}>
            Cameras
          </Link>
          <Link to="/executions" className={route.name === 'executions' || route.name === 'execution' ? 'active' : ''} data-testid="nav-batch">
            Batch
          </Link>
          <Link to="/events" className={route.name === 'events' ? 'active' : ''} data-testid="nav-events">
            Events
          </Link>
        </nav>
        <div className="spacer" />
        <TokenField />
      </header>
      <main>{page}</main>
    </>
  );
}
