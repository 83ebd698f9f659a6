package org.xmodal.opensearch.rerank;

import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.security.AccessController;
import java.security.PrivilegedAction;
import java.security.PrivilegedActionException;
import java.security.PrivilegedExceptionAction;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * POSTs JSON to the rerank service with java.net.http.HttpClient. One client (its connection pool
 * and selector thread) is shared by all processors of the node. Calls run in
 * AccessController.doPrivileged: the plugin's plugin-security.policy grants the socket and URL
 * permissions, which the rest of the call stack (OpenSearch core) does not have.
 */
final class RerankServiceClient {

    /** Largest answer read from the service (a rerank answer for a few hundred hits is a few KiB). */
    static final int MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

    private static final String USER_AGENT = "opensearch-xmodal-rerank/1";

    private volatile HttpClient client;

    private HttpClient client() {
        HttpClient c = client;
        if (c == null) {
            synchronized (this) {
                c = client;
                if (c == null) {
                    // Building the client starts its selector thread: do it with the plugin's permissions.
                    // Own executor: the default one makes InnocuousThreads in another thread group,
                    // which OpenSearch's SecureSM only lets code with "modifyArbitraryThread" touch.
                    ExecutorService executor = Executors.newCachedThreadPool(new DaemonThreadFactory());
                    c = AccessController.doPrivileged(
                        (PrivilegedAction<HttpClient>) () -> HttpClient.newBuilder()
                            .version(HttpClient.Version.HTTP_1_1)
                            .proxy(HttpClient.Builder.NO_PROXY)
                            .followRedirects(HttpClient.Redirect.NEVER)
                            .executor(executor)
                            .build()
                    );
                    client = c;
                }
            }
        }
        return c;
    }

    /**
     * POSTs {@code body} (JSON) to {@code uri} and returns the 2xx answer's body.
     *
     * @throws RerankException with a short reason on timeout, connection error, non-2xx status or an
     *         oversized answer
     */
    byte[] postJson(URI uri, byte[] body, String apiKey, long timeoutMs) throws RerankException {
        HttpRequest.Builder builder = HttpRequest.newBuilder(uri)
            .timeout(Duration.ofMillis(timeoutMs))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("User-Agent", USER_AGENT)
            .POST(HttpRequest.BodyPublishers.ofByteArray(body));
        if (apiKey != null && !apiKey.isEmpty()) {
            builder.header("X-API-Key", apiKey);
        }
        HttpRequest request = builder.build();
        HttpClient http = client();
        HttpResponse<byte[]> response;
        try {
            response = AccessController.doPrivileged((PrivilegedExceptionAction<HttpResponse<byte[]>>) () -> {
                CompletableFuture<HttpResponse<byte[]>> future = http.sendAsync(request, HttpResponse.BodyHandlers.ofByteArray());
                try {
                    // The request timeout should fire first; this bounds the call even if it does not.
                    return future.get(timeoutMs + 50, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    future.cancel(true);
                    throw new RerankException("timeout after " + timeoutMs + " ms");
                } catch (InterruptedException e) {
                    future.cancel(true);
                    Thread.currentThread().interrupt();
                    throw new RerankException("interrupted while waiting for the rerank service");
                }
            });
        } catch (PrivilegedActionException e) {
            throw translate(e.getException(), uri, timeoutMs);
        } catch (SecurityException e) {
            throw new RerankException("not permitted to connect to " + uri + ": " + e.getMessage());
        }
        int status = response.statusCode();
        byte[] bytes = response.body() == null ? new byte[0] : response.body();
        if (status < 200 || status > 299) {
            throw new RerankException("HTTP " + status + " from " + uri + snippet(bytes));
        }
        if (bytes.length > MAX_RESPONSE_BYTES) {
            throw new RerankException("answer of " + bytes.length + " bytes is larger than " + MAX_RESPONSE_BYTES);
        }
        return bytes;
    }

    private static RerankException translate(Exception e, URI uri, long timeoutMs) {
        Throwable cause = e;
        if (cause instanceof ExecutionException && cause.getCause() != null) {
            cause = cause.getCause();
        }
        if (cause instanceof RerankException) {
            return (RerankException) cause;
        }
        if (cause instanceof HttpConnectTimeoutException || cause instanceof HttpTimeoutException) {
            return new RerankException("timeout after " + timeoutMs + " ms");
        }
        if (cause instanceof ConnectException) {
            return new RerankException("connection error: cannot connect to " + uri + describe(cause));
        }
        if (cause instanceof IOException) {
            return new RerankException("connection error: " + describe(cause).substring(2));
        }
        if (cause instanceof SecurityException) {
            return new RerankException("not permitted to connect to " + uri + describe(cause));
        }
        return new RerankException("request to " + uri + " failed" + describe(cause));
    }

    private static String describe(Throwable t) {
        String message = t.getMessage();
        return ": " + t.getClass().getSimpleName() + (message == null || message.isEmpty() ? "" : " (" + message + ")");
    }

    private static String snippet(byte[] bytes) {
        if (bytes.length == 0) {
            return "";
        }
        String text = new String(bytes, 0, Math.min(bytes.length, 200), StandardCharsets.UTF_8).replaceAll("\\s+", " ").trim();
        return text.isEmpty() ? "" : ": " + text;
    }

    /** Daemon threads in the thread group of the thread that made the factory (OpenSearch's own). */
    private static final class DaemonThreadFactory implements ThreadFactory {
        private final ThreadGroup group = Thread.currentThread().getThreadGroup();
        private final AtomicInteger next = new AtomicInteger(1);

        @Override
        public Thread newThread(Runnable runnable) {
            return AccessController.doPrivileged((PrivilegedAction<Thread>) () -> {
                Thread thread = new Thread(group, runnable, "xmodal-rerank-http-" + next.getAndIncrement());
                thread.setDaemon(true);
                return thread;
            });
        }
    }

    /** A failed call to the service; the message is the reason reported in the response ext. */
    static final class RerankException extends Exception {
        private static final long serialVersionUID = 1L;

        RerankException(String message) {
            super(message, null, false, false);
        }
    }
}
