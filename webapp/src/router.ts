// A tiny client-side router on window.location (no dependency needed for
// three routes). The Go server falls back to index.html for unknown paths.
import { createElement, useSyncExternalStore, type AnchorHTMLAttributes, type MouseEvent } from 'react';

export type Route =
  | { name: 'dashboard' }
  | { name: 'camera'; id: string }
  | { name: 'publish'; id: string }
  | { name: 'executions' }
  | { name: 'events' }
  | { name: 'execution'; id: string }
  | { name: 'notfound'; path: string };

function decode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

export function matchRoute(pathname: string): Route {
  const p = pathname.replace(/\/+$/, '') || '/';
  if (p === '/') return { name: 'dashboard' };
  if (p === '/executions') return { name: 'executions' };
  if (p === '/events') return { name: 'events' };
  const m = /^\/(cameras|publish|executions)\/([^/]+)$/.exec(p);
  if (m) {
    const id = decode(m[2]);
    if (id) {
      if (m[1] === 'cameras') return { name: 'camera', id };
      if (m[1] === 'publish') return { name: 'publish', id };
      return { name: 'execution', id };
    }
  }
  return { name: 'notfound', path: pathname };
}

export const cameraURL = (id: string) => `/cameras/${encodeURIComponent(id)}`;
export const publishURL = (id: string) => `/publish/${encodeURIComponent(id)}`;
export const executionURL = (id: string) => `/executions/${encodeURIComponent(id)}`;

const NAV_EVENT = 'ifc-navigate';

function subscribe(cb: () => void): () => void {
  window.addEventListener('popstate', cb);
  window.addEventListener(NAV_EVENT, cb);
  return () => {
    window.removeEventListener('popstate', cb);
    window.removeEventListener(NAV_EVENT, cb);
  };
}

export function usePathname(): string {
  return useSyncExternalStore(subscribe, () => window.location.pathname);
}

export function navigate(to: string): void {
  if (to === window.location.pathname + window.location.search) return;
  window.history.pushState(null, '', to);
  window.dispatchEvent(new Event(NAV_EVENT));
  window.scrollTo(0, 0);
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { to: string };

export function Link({ to, onClick, ...rest }: LinkProps) {
  const handle = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (rest.target && rest.target !== '_self') return;
    e.preventDefault();
    navigate(to);
  };
  return createElement('a', { ...rest, href: to, onClick: handle });
}
