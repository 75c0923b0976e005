import { createClient, OrchestratorClient, OrchestratorError, type operations } from '@orchestrator/client';
import { useQuery } from '@tanstack/react-query';
import { createContext, type ReactNode, useCallback, useContext, useMemo, useState } from 'react';
import { ErrorBox, Loading } from './states.tsx';

/** GET /whoami: the key's id, scope and what it may do. */
export type WhoAmI = operations['whoAmI']['responses'][200]['content']['application/json'];
export type Access = WhoAmI['access'][number];

/**
 * How the console authenticates its API calls: the key typed into the sign-in form, kept in
 * sessionStorage (this tab only, gone when it closes) and sent as `Authorization: Bearer`. The
 * browser's cached basic credentials (what opened /console) are not used for the API: a page
 * of another site could make the browser send those, and the API accepts basic auth on browser
 * pages only. A bearer header needs a CORS preflight cross-site, so the CSRF guard holds as it is.
 */
const KEY_STORAGE = 'orchestrator.console.apiKey';

interface ApiState {
  client: OrchestratorClient;
  whoami: WhoAmI;
  /** Forgets the key and shows the sign-in form. */
  signOut: () => void;
}

const ApiContext = createContext<ApiState | undefined>(undefined);

/** The answer's data; a non-2xx answer throws an OrchestratorError with the API's code and problems. */
export async function call<T>(request: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await request;
  if (!response.ok) throw new OrchestratorError(response, error);
  return data as T;
}

function storedKey(): string | undefined {
  return sessionStorage.getItem(KEY_STORAGE) ?? undefined;
}

/** Provides the API client and the caller's scope; asks for a key while the API refuses the one it has. */
export function ApiProvider({ children }: { children: ReactNode }) {
  const [key, setKey] = useState(storedKey);
  const client = useMemo(() => createClient({ baseUrl: window.location.origin, ...(key ? { apiKey: key } : {}) }), [key]);
  const whoami = useQuery({
    queryKey: ['whoami', key ?? ''],
    queryFn: () => call(client.api.GET('/whoami')),
    retry: (count, error) => !(error instanceof OrchestratorError && error.status === 401) && count < 2,
    staleTime: Number.POSITIVE_INFINITY,
  });
  const signIn = useCallback((value: string) => {
    sessionStorage.setItem(KEY_STORAGE, value);
    setKey(value);
  }, []);
  const signOut = useCallback(() => {
    sessionStorage.removeItem(KEY_STORAGE);
    setKey(undefined);
  }, []);
  const state = useMemo(() => (whoami.data ? { client, whoami: whoami.data, signOut } : undefined), [client, whoami.data, signOut]);

  if (whoami.isPending) return <Loading label="Connecting to the API" />;
  if (whoami.error instanceof OrchestratorError && whoami.error.status === 401) {
    return <SignIn onSignIn={signIn} refused={key !== undefined} />;
  }
  if (!state) return <ErrorBox error={whoami.error} />;
  return <ApiContext.Provider value={state}>{children}</ApiContext.Provider>;
}

function SignIn({ onSignIn, refused }: { onSignIn: (key: string) => void; refused: boolean }) {
  return (
    <main className="sign-in">
      <h1>Orchestrator console</h1>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          const value = new FormData(event.currentTarget).get('key');
          if (typeof value === 'string' && value.trim() !== '') onSignIn(value.trim());
        }}
      >
        <label htmlFor="api-key">API key</label>
        <input id="api-key" name="key" type="password" autoComplete="current-password" required aria-describedby="api-key-help" />
        <p id="api-key-help" className="hint">
          Kept in this tab only (sessionStorage) and sent as a bearer key.
        </p>
        {refused && (
          <p role="alert" className="error">
            The API refused this key.
          </p>
        )}
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}

export function useApi(): ApiState {
  const state = useContext(ApiContext);
  if (!state) throw new Error('useApi outside ApiProvider');
  return state;
}

/** Whether the caller may do `access` (a read key may not `manageTasks`): actions it may not take are not shown. */
export function useCan(access: Access): boolean {
  return useApi().whoami.access.includes(access);
}
