/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// During `npm run dev`, API, WHIP and WHEP calls are proxied to a running
// `imageflow serve` (override with IFC_SERVER=http://host:port).
const apiTarget = process.env.IFC_SERVER ?? 'http://localhost:8080';

export default defineConfig({
  base: '/',
  plugins: [react()],
  build: {
    // Embedded by webapp/embed.go (//go:embed all:dist) and served by the Go server.
    outDir: 'dist/ui',
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      '/api': { target: apiTarget, changeOrigin: true, ws: true },
    },
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
});
