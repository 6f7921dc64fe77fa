import { Suspense, lazy, useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { createBrowserRouter, Outlet, RouterProvider } from 'react-router';
import { getToken, onTokenChange, setToken } from './api';
import { CameraLive } from './pages/CameraLive';
import { Dashboard } from './pages/Dashboard';
import { Execution } from './pages/Execution';
import { Events } from './pages/Events';
import { Executions } from './pages/Executions';
import { NotFound } from './pages/NotFound';
import { LiveGrid } from './pages/LiveGrid';
import { Publish } from './pages/Publish';
import { Link, NavLink, PATHS, pageOf, useLocation, useParams } from './router';

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

/** Renders a page that shows one thing by id, new for every id (key), or
 * NotFound when the path's id does not decode. */
function ByID({ page }: { page: (id: string) => ReactNode }) {
  const { id } = useParams();
  const { pathname } = useLocation();
  if (id === undefined || pageOf(pathname).name === 'notfound') return <NotFound path={pathname} />;
  return page(id);
}

function NotFoundPage() {
  return <NotFound path={useLocation().pathname} />;
}

// The designer (React Flow) and the monitoring page (uPlot) load with their
// libraries when first opened, so the other pages do not wait for them.
const PipelineDesigner = lazy(() => import('./pages/PipelineDesigner').then((m) => ({ default: m.PipelineDesigner })));
const Monitoring = lazy(() => import('./pages/Monitoring').then((m) => ({ default: m.Monitoring })));

function Layout() {
  return (
    <>
      <header className="topbar">
        <Link to="/" className="brand">
          <img src="/favicon.svg" alt="" width={22} height={22} />
          ImageFlowCanvas
        </Link>
        <nav>
          <NavLink to="/" end>
            Cameras
          </NavLink>
          <NavLink to={PATHS.live} data-testid="nav-live">
            Live
          </NavLink>
          <NavLink to={PATHS.pipelineNew} data-testid="nav-designer">
            Designer
          </NavLink>
          <NavLink to={PATHS.executions} data-testid="nav-batch">
            Batch
          </NavLink>
          <NavLink to={PATHS.events} data-testid="nav-events">
            Events
          </NavLink>
          <NavLink to={PATHS.monitoring} data-testid="nav-monitoring">
            Monitoring
          </NavLink>
        </nav>
        <div className="spacer" />
        <TokenField />
      </header>
      <main>
        <Suspense fallback={<p className="muted">Loading…</p>}>
          <Outlet />
        </Suspense>
      </main>
    </>
  );
}

// Every page loads its data itself with useLoad (pages/useLoad.ts): polled
// where it changes, reloaded when the API token changes.
const router = createBrowserRouter([
  {
    element: <Layout />,
    children: [
      { path: PATHS.dashboard, element: <Dashboard /> },
      { path: PATHS.camera, element: <ByID page={(id) => <CameraLive key={id} id={id} />} /> },
      { path: PATHS.publish, element: <ByID page={(id) => <Publish key={id} id={id} />} /> },
      { path: PATHS.executions, element: <Executions /> },
      { path: PATHS.events, element: <Events /> },
      { path: PATHS.execution, element: <ByID page={(id) => <Execution key={id} id={id} />} /> },
      { path: PATHS.pipelineNew, element: <PipelineDesigner key="new" /> },
      { path: PATHS.pipeline, element: <ByID page={(id) => <PipelineDesigner key={id} id={id} />} /> },
      { path: PATHS.live, element: <LiveGrid /> },
      { path: PATHS.monitoring, element: <Monitoring /> },
      { path: '*', element: <NotFoundPage /> },
    ],
  },
]);

export function App() {
  return <RouterProvider router={router} />;
}
