// The original service's web app registered a service worker here. clinscribe
// replaces that app on the same address: this worker takes the old one's
// place, claims no page and handles no request, and unregisters itself, so the
// old registration goes away and its caches with it.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => !k.startsWith('clinscribe-')).map((k) => caches.delete(k))))
      .then(() => self.registration.unregister()),
  );
});
