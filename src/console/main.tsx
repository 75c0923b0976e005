import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { BrowserRouter, Navigate, Route, Routes } from 'react-router';
import { ApiProvider } from './components/api.tsx';
import { Layout } from './components/layout.tsx';
import { HOME_PATH, PAGES } from './pages.tsx';
import { NotFound } from './pages/not-found.tsx';
import './styles.css';

const queryClient = new QueryClient({
  defaultOptions: {
    // A 4xx will not change by asking again; a network blip or a 503 may.
    queries: { retry: (count, error) => count < 2 && !(error && 'status' in error && Number(error.status) < 500), refetchOnWindowFocus: true },
  },
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <ApiProvider>
        <BrowserRouter basename="/console">
          <Routes>
            <Route element={<Layout />}>
              <Route index element={<Navigate to={HOME_PATH} replace />} />
              {PAGES.map(({ path, component: Page }) => (
                <Route key={path} path={path} element={<Page />} />
              ))}
              <Route path="*" element={<NotFound />} />
            </Route>
          </Routes>
        </BrowserRouter>
      </ApiProvider>
    </QueryClientProvider>
  </StrictMode>,
);
