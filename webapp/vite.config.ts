/// <reference types="vitest/config" />
import { readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';
import react from '@vitejs/plugin-react';

// The API page (/api/docs, public/docs/) renders the server's OpenAPI
// document with Swagger UI; its prebuilt bundle is copied from the
// swagger-ui-dist package into the build, so nothing comes from the internet.
function apiDocsViewer(): Plugin {
  return {
    name: 'api-docs-viewer',
    apply: 'build',
    generateBundle() {
      // The bundle and its licence texts (Apache-2.0 and the notices of
      // what it bundles) travel together.
      const files: Record<string, string> = {
        'swagger-ui-bundle.js': 'swagger-ui-bundle.js',
        'swagger-ui.css': 'swagger-ui.css',
        'swagger-ui-bundle.js.LICENSE.txt': 'swagger-ui-bundle.js.LICENSE.txt',
        LICENSE: 'swagger-ui.LICENSE.txt',
        NOTICE: 'swagger-ui.NOTICE.txt',
      };
      for (const [from, to] of Object.entries(files)) {
        const source = readFileSync(new URL(`./node_modules/swagger-ui-dist/${from}`, import.meta.url));
        this.emitFile({ type: 'asset', fileName: `docs/${to}`, source });
      }
    },
  };
}

// During `npm run dev`, API, WHIP and WHEP calls are proxied to a running
// `imageflow serve` (override with IFC_SERVER=http://host:port).
const apiTarget = process.env.IFC_SERVER ?? 'http://localhost:8080';

export default defineConfig({
  base: '/',
  plugins: [react(), apiDocsViewer()],
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
