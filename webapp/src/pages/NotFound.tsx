import { Link } from '../router';

export function NotFound({ path }: { path: string }) {
  return (
    <div className="page" data-testid="not-found">
      <h1>Page not found</h1>
      <p className="muted">
        There is no page at <code>{path}</code>.
      </p>
      <p>
        <Link to="/">Back to the cameras</Link>
      </p>
    </div>
  );
}
