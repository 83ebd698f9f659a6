package org.xmodal.opensearch.rerank;

import java.util.List;
import java.util.Map;

import org.opensearch.plugins.Plugin;
import org.opensearch.plugins.SearchPipelinePlugin;
import org.opensearch.plugins.SearchPlugin;
import org.opensearch.search.pipeline.Processor;
import org.opensearch.search.pipeline.SearchResponseProcessor;

/**
 * Plugin xmodal-rerank: the search response processor {@code xmodal_rerank}, the request ext
 * {@code xmodal} (the query) and the response ext {@code xmodal_rerank} (the outcome).
 */
public class XModalRerankPlugin extends Plugin implements SearchPlugin, SearchPipelinePlugin {

    private final RerankServiceClient client = new RerankServiceClient();

    @Override
    public List<SearchExtSpec<?>> getSearchExts() {
        return List.of(
            new SearchExtSpec<>(XModalSearchExtBuilder.NAME, XModalSearchExtBuilder::new, XModalSearchExtBuilder::fromXContent),
            new SearchExtSpec<>(XModalRerankResponseExt.NAME, XModalRerankResponseExt::new, XModalRerankResponseExt::fromXContent)
        );
    }

    @Override
    public Map<String, Processor.Factory<SearchResponseProcessor>> getResponseProcessors(Parameters parameters) {
        return Map.of(XModalRerankProcessor.TYPE, new XModalRerankProcessor.Factory(client, parameters.genericExecutor));
    }
}
