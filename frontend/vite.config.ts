/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// `npm run dev` proxies /api to a running API (MLSTACK_API_URL, default the local-mode API port).
const apiUrl = process.env.MLSTACK_API_URL ?? "http://127.0.0.1:8888";

export default defineConfig({
  build: {
    target: "es2022",
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": { target: apiUrl, changeOrigin: true, rewrite: (p) => p.replace(/^\/api/, "") },
    },
  },
  test: {
    environment: "jsdom",
    include: ["tests/**/*.test.ts"],
  },
});
