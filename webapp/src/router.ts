// Page addresses and links. Routing itself is react-router's (the route
// table is in App.tsx); pages link with Link and build addresses here, so a
// path is spelled in one place. The Go server falls back to index.html for
// unknown paths.
import { matchRoutes } from 'react-router';

export { Link, NavLink, useBlocker, useLocation, useNavigate, useParams } from 'react-router';

/** The UI's pages by path pattern (react-router syntax); App.tsx maps each to its component. */
export const PATHS = {
  dashboard: '/',
  camera: '/cameras/:id',
  publish: '/publish/:id',
  executions: '/executions',
  events: '/events',
  execution: '/executions/:id',
  pipelineNew: '/pipelines/new',
  pipeline: '/pipelines/:id',
  live: '/live',
  monitoring: '/monitoring',
} as const;

export const cameraURL = (id: string) => `/cameras/${encodeURIComponent(id)}`;
export const publishURL = (id: string) => `/publish/${encodeURIComponent(id)}`;
export const executionURL = (id: string) => `/executions/${encodeURIComponent(id)}`;
export const pipelineURL = (id: string) => `/pipelines/${encodeURIComponent(id)}`;

export type PageName = keyof typeof PATHS | 'notfound';

/** Whether every %-escape in a path decodes (a malformed one names no page). */
function decodable(pathname: string): boolean {
  try {
    decodeURIComponent(pathname);
    return true;
  } catch {
    return false;
  }
}

/** The page a path shows, with its id: the same table App.tsx routes by. */
export function pageOf(pathname: string): { name: PageName; id?: string } {
  if (decodable(pathname)) {
    const routes = Object.entries(PATHS).map(([name, path]) => ({ name: name as PageName, path }));
    const m = matchRoutes(routes, pathname);
    if (m && m.length > 0) {
      const { route, params } = m[m.length - 1];
      return params.id === undefined ? { name: route.name } : { name: route.name, id: params.id };
    }
  }
  return { name: 'notfound' };
}
