import { Suspense } from 'react';
import { NavLink, Outlet } from 'react-router';
import { PAGES } from '../pages.tsx';
import { useApi } from './api.tsx';
import { Loading } from './states.tsx';

/** The frame of every page: a skip link, the navigation (from the pages registry), who is signed in, the page. */
export function Layout() {
  const { whoami, signOut } = useApi();
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Orchestrator</span>
        <nav aria-label="Console">
          <ul>
            {PAGES.filter((page) => page.nav).map((page) => (
              <li key={page.path}>
                <NavLink to={page.path} end={false}>
                  {page.nav}
                </NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <span className="who">
          {whoami.scope ? (
            <>
              {whoami.key_id} <span className="badge">{whoami.scope}</span>{' '}
              <button type="button" className="link" onClick={signOut}>
                Sign out
              </button>
            </>
          ) : (
            'authentication off'
          )}
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<Loading />}>
          <Outlet />
        </Suspense>
      </main>
    </>
  );
}
