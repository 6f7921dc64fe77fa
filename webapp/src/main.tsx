import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { adoptTokenFromURL } from './api';
import { App } from './App';
import './styles.css';

adoptTokenFromURL();

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
