// clinscribe's service worker: precaches the app shell of one version, so
// every page loads offline after the first visit, and serves it cache-first.
// API requests always go to the network (the pages handle being offline).
// A new version installs in the background and takes over at once; an open
// page keeps running its already-loaded code (a recording in progress writes
// to IndexedDB, not through this worker), and the next load uses the new shell.
//
// Served twice from this template: /sw-module.js (an ES module worker, for
// browsers with Background Sync, i.e. Chromium) uploads saved dictations itself
// when the browser fires a sync, even with no page open; /sw.js (a classic
// worker, everywhere else) can only wake the open pages' upload managers.
{{MODULE_IMPORT}}

const VERSION = '{{VERSION}}';
const CACHE = `clinscribe-${VERSION}`;
const SHELL = '/';
const PRECACHE = [SHELL, '/manifest.webmanifest', {{ASSETS}}];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)).then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('clinscribe-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.startsWith('/api/')) {
    return;
  }
  if (request.mode === 'navigate') {
    // Every page is the same shell; the app picks the view from the path.
    event.respondWith(
      fetch(request).catch(() => caches.match(SHELL, { cacheName: CACHE })),
    );
    return;
  }
  event.respondWith(
    caches.match(request, { cacheName: CACHE }).then((hit) => hit || fetch(request)),
  );
});

// Background Sync: the browser fires it when connectivity allows. The worker
// shares the pages' lock, so a dictation is never uploaded twice at once; a
// failure rejects, and the browser retries the sync later with its own backoff.
self.addEventListener('sync', (event) => {
  if (event.tag !== 'upload') return;
  event.waitUntil({{SYNC_ACTION}});
});
